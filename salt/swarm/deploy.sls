# Deploy the stacks of pillar armswarm:stacks on the first manager of armswarm:swarm (or of
# the layout named by pillar swarm_layout, as in swarm.init):
#   salt-run state.orch swarm.deploy          (test=True predicts the changes)
# Run after swarm.init; images come from the cluster registry (salt-run imagebuild.run).
{%- set layout = salt["pillar.get"]("swarm_layout", "armswarm:swarm") %}
{%- set managers = salt["pillar.get"](layout ~ ":managers", []) %}
{%- if managers is string or managers is mapping or not managers %}
armswarm-stacks-no-manager:
  test.fail_without_changes:
    - name: {{ layout }}:managers must list minion ids to deploy stacks from
{%- else %}
armswarm-stacks-deployed:
  salt.state:
    - tgt: {{ managers[0] | json }}
    - sls: swarm.stacks
    {#- What this run's pillar says (e.g. pillar=… on the command line) reaches the manager. #}
    {%- set registry_host = salt["pillar.get"]("armswarm:registry:host", "") %}
    - pillar:
        armswarm:
          stacks: {{ salt["pillar.get"]("armswarm:stacks", {}) | json }}
          {%- if registry_host %}
          {#- only when set: an empty value would hide the manager's own pillar #}
          registry:
            host: {{ registry_host | json }}
          {%- endif %}
{%- endif %}
