# A stateless web service (a release download site) replicated over the 64-bit ARM nodes:
# three replicas, never two on one board, rolling updates that start the new task first.
armswarm:
  swarm:
    managers: [arm-1, arm-2, arm-3]
    workers: [arm-4, arm-5]
  stacks:
    releases:
      compose: salt://web-arm/stacks/releases.yml
      context: {tag: latest}
