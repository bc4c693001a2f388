# Deploy the stacks of pillar armswarm:stacks from a manager of armswarm:swarm (or of the
# layout named by pillar swarm_layout, as in swarm.init): the first one, in the layout's
# order, that answers as a manager of a swarm with a leader (a dead managers[0] does not stop
# a deploy):
#   salt-run state.orch swarm.deploy          (test=True predicts the changes)
# Run after swarm.init; images come from the cluster registry (salt-run imagebuild.run).
{%- set layout = salt["pillar.get"]("swarm_layout", "armswarm:swarm") %}
{%- set managers = salt["pillar.get"](layout ~ ":managers", []) %}
{%- set wait = salt["pillar.get"](layout ~ ":answer_timeout", 20) %}
{%- set chosen = namespace(manager=none) %}
{%- if managers is not string and managers is not mapping and managers %}
{%-   set answers = salt["saltutil.cmd"](managers, "docker_swarm.state", tgt_type="list", timeout=wait) %}
{%-   for minion in managers %}
{%-     set swarm = (answers.get(minion) or {}).get("ret") %}
{%-     if chosen.manager is none and swarm is mapping and swarm.get("state") == "active" and swarm.get("is_manager") and swarm.get("cluster_id") %}
{%-       set chosen.manager = minion %}
{%-     endif %}
{%-   endfor %}
{%- endif %}
{%- if managers is string or managers is mapping or not managers %}
armswarm-stacks-no-manager:
  test.fail_without_changes:
    - name: {{ layout }}:managers must list minion ids to deploy stacks from
{%- elif chosen.manager is none %}
armswarm-stacks-no-manager:
  test.fail_without_changes:
    - name: {{ "no manager of " ~ layout ~ " (" ~ managers | join(", ") ~ ") answers as a manager of a swarm with a leader" }}
{%- else %}
armswarm-stacks-deployed:
  salt.state:
    - tgt: {{ chosen.manager | json }}
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
