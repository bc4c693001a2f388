# Four ODROID HC1 in a 19" rack (Arch Linux ARM, root on each board's SSD), one Salt master on
# the NAS: three managers and one worker, the registry on hc1-1, daily image builds.
armswarm:
  swarm:
    managers: [hc1-1, hc1-2, hc1-3]
    workers: [hc1-4]
    nodes:
      hc1-1:
        labels: {role: registry}
      hc1-4:
        labels: {role: db}
  registry:
    node: hc1-1
    host: registry.local.lan:5000
    storage: /srv/registry          # on hc1-1's SSD
    keep: 7
  imagebuild:
    source: salt://hc1-rack/images
    target: 'hc1-*'
  # Every volume of every board, daily, to the NAS (NFS-mounted on each HC1), kept 14 days;
  # MariaDB dumped first; stopped containers, dangling images and safe volumes cleaned up.
  backup:
    target:
      path: /mnt/nas/swarm-backup
    keep_daily: 14
    mysql:
      credentials:
        apps_db: {user: backup, password_pillar: 'secrets:apps_db:backup_password'}
    schedule:
      backup: '30 3 * * *'
      mysql: '0 3 * * *'
      cleanup: '30 5 * * *'
  stacks:
    apps:
      compose: salt://hc1-rack/stacks/apps.yml
      context: {tag: latest}
      prune: true
armnode:
  admin:
    name: jit
  journald:
    Storage: volatile               # flash-friendly: the journal stays in RAM
  kernel_args:
    present: [fsck.mode=force, fsck.repair=yes]   # fsck of the SSD root at every boot
  tuning:
    root_mount_options: [noatime]
