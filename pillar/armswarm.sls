# armswarm settings shared by every module (docs/swarm.rst describes every key).
armswarm:
  # The docker engine each minion manages (the default is the local socket).
  docker:
    base_url: unix://var/run/docker.sock
    timeout: 60
  # The swarm, formed by `salt-run state.orch swarm.init`.
  swarm:
    # Minion ids; managers must be an odd number (quorum).
    managers:
      - node1
      - node2
      - node3
    # Minion ids, or a target: {tgt: 'G@armnode:board:sopine', tgt_type: compound}
    workers:
      - node4
      - node5
    # Per node: advertise_addr or advertise_interface (default: the default-route interface),
    # labels (added to the armswarm.* labels from grains) and availability.
    nodes:
      node4:
        labels:
          pool: workers
      node5:
        labels:
          pool: workers
    allow_even_managers: false
    prune: false
    remove_undeclared_labels: false
    grain_labels: true
    force: false
  # Distributed image builds: `salt-run imagebuild.run` (docs/imagebuild.rst).
  imagebuild:
    # A tree of image directories: salt://… or a directory on the master.
    source: salt://imagebuild/images
    # The build nodes.
    target: '*'
    tgt_type: glob
    strategy: dynamic
    retries: 2
  # The cluster registry (the lab sets host and ca_file in its master config).
  # registry:
  #   host: registry.local.lan:5000
  #   ca_file: /etc/docker/certs.d/registry.local.lan:5000/ca.crt
  #   keep: 7
