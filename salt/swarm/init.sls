# Form, grow or repair the Docker Swarm from pillar armswarm:swarm.
#   salt-run state.orch swarm.init            (test=True predicts the changes)
# Needs the armswarm modules on the master: salt-run saltutil.sync_all (or pip install armswarm).
# Several swarms from one master: keep each layout under its own key and name it, e.g.
#   salt-run state.orch swarm.init pillar='{"swarm_layout": "armswarm:swarms:rack2"}'
armswarm-swarm-converged:
  swarm_cluster.converged:
    - name: {{ salt["pillar.get"]("swarm_layout", "armswarm:swarm") | json }}
