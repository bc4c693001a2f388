# Daily volume backups, MySQL/MariaDB dumps and clean-up on every node:
#   salt '*' state.apply backup
include:
  - backup.valid
  - backup.helper
  - backup.schedule
