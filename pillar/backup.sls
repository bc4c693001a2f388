# Daily backups to the network drive mounted at /mnt/armswarm-backup on every node (in the lab:
# a host directory bind-mounted into each node). docs/backup.rst describes every key.
armswarm:
  backup:
    target:
      path: /mnt/armswarm-backup
      require_mount: true
    keep_daily: 7
    exclude: []
    schedule:
      backup: '30 2 * * *'
      mysql: '0 2 * * *'
      cleanup: '30 4 * * *'
