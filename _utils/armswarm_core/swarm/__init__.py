"""The Docker Swarm.

``swarm_engine`` (engine calls for one node), ``swarm_layout`` (the pillar layout, validated),
``swarm_plan`` (what to change to reach it), ``converge`` (the plan carried out through a
transport to the minions), ``networks``, ``stacks`` and ``join_tokens`` (join tokens sealed
for one minion's key).
"""
