# Turn a freshly flashed board into a cluster node: salt '*' state.apply armnode
include:
  - armnode.valid
  - armnode.packages
  - armnode.users
  - armnode.logging
  - armnode.boot
  - armnode.mail
  - armnode.docker
  - armnode.time
  - armnode.tuning
