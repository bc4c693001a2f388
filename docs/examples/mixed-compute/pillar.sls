# A compute cluster: five RockPro64 (6 cores) and a Clusterboard of seven SOPINE (4 cores).
# The head is a RockPro64; heavy jobs go to 6-core boards, light ones to the SOPINEs, by the
# labels every node gets from its grains (armswarm.board, armswarm.cpus, armswarm.arch).
armswarm:
  swarm:
    managers: [rp64-1]
    workers: [rp64-2, rp64-3, rp64-4, rp64-5, sopine-1, sopine-2, sopine-3, sopine-4, sopine-5, sopine-6, sopine-7]
    nodes:
      rp64-1:
        labels: {role: head}
  imagebuild:
    # The images are rebuilt for ARM on the cluster itself (no arm64 wheels upstream).
    source: salt://mixed-compute/images
    target: 'rp64-*'
  stacks:
    compute:
      compose: salt://mixed-compute/stacks/compute.yml
      context: {tag: latest}
      prune: true
