# The armnode formula's settings for the example cluster (salt/armnode/pillar.example lists
# every key). The admin's password hash is the crypt(3) SHA-512 of "armswarm-lab".
armnode:
  admin:
    name: clusteradm
    password_hash: $6$armswarm$iUyPQp977LhtN1uH3e0bopi0Kxx1fTfoo/gWyGsnENPxZMzKd75NeNuFlw1MCTzxWREuHh8QgN6OGZtwrNyld.
    sudo_nopasswd: true
  scripts:
    node-report: |
      #!/bin/sh
      # What this node is and how it is doing.
      salt-call --local grains.get armnode 2>/dev/null || true
      df -h / ; uptime
  # cron and alerts go out through msmtp (the lab has no mail server: the relay is only
  # configured there).
  mail:
    enabled: true
    relay: msmtp
    host: smtp.example.org
    port: 587
    from: cluster@example.org
    user: cluster@example.org
    password_pillar: secrets:mail:password
    root_alias: admins@example.org

# Secrets live under their own key; states read them on the node and never return them.
secrets:
  mail:
    password: lab-relay-password-not-a-secret
