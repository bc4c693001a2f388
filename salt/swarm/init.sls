# Form, grow or repair the Docker Swarm from pillar armswarm:swarm.
#   salt-run state.orch swarm.init            (test=True predicts the changes)
# Needs the armswarm modules on the master: salt-run saltutil.sync_all (or pip install armswarm).
armswarm-swarm-converged:
  swarm_cluster.converged:
    - name: armswarm:swarm
