{%- from "backup/map.jinja" import backup with context %}
# Every other backup state requires this one: bad settings stop the run before any change.
backup-settings-valid:
  backup.settings_valid:
    - settings: {{ backup | json }}
