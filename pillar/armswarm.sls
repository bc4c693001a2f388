# armswarm settings shared by every module (see docs/pillar).
armswarm:
  # The docker engine each minion manages (the default is the local socket).
  docker:
    base_url: unix://var/run/docker.sock
    timeout: 60
  # Cluster layout by minion id: managers must be an odd number (quorum).
  swarm:
    managers:
      - node1
      - node2
      - node3
    workers:
      - node4
      - node5
