# Example pillar for a 5-board cluster; the lab serves exactly this tree.
base:
  '*':
    - armswarm
    - armnode
    - backup
