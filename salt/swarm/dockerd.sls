# Restart the engines whose /etc/docker/daemon.json changed while in the swarm (the armnode
# formula marks them), one node at a time, the managers' quorum kept:
#   salt '*' state.apply armnode
#   salt-run state.orch swarm.dockerd
armswarm-dockerd-rolling-restart:
  salt.runner:
    - name: armnode_docker.rolling_restart
