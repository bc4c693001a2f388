# A Clusterboard with seven SOPINE modules as a pool of stateless queue workers (email
# rendering). Adding a board is adding it here: it joins, gets the "pool" label, and the
# global service starts a worker on it.
armswarm:
  swarm:
    managers: [sopine-1]
    workers: [sopine-2, sopine-3, sopine-4, sopine-5, sopine-6, sopine-7]
    nodes:
      sopine-1: {labels: {pool: render}}
      sopine-2: {labels: {pool: render}}
      sopine-3: {labels: {pool: render}}
      sopine-4: {labels: {pool: render}}
      sopine-5: {labels: {pool: render}}
      sopine-6: {labels: {pool: render}}
      sopine-7: {labels: {pool: render}}
  stacks:
    render:
      compose: salt://sopine-pool/stacks/render.yml
      context: {tag: latest}
