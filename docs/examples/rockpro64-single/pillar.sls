# One RockPro64 running everything that used to run on two 24-core servers: a one-node swarm,
# the services converted from docker-compose files, data on the NVMe under /srv.
armswarm:
  swarm:
    managers: [rp64]
    workers: []
  stacks:
    home:
      compose: salt://rockpro64-single/stacks/home.yml
      context: {tag: latest}
      prune: true
armnode:
  tuning:
    irq_affinity:
      enabled: true                 # the big cores (2x A72) take the network interrupts
    cpu_governor: schedutil
