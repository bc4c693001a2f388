# Deploy the stacks of pillar armswarm:stacks from a manager of armswarm:swarm (or of the
# layout named by pillar swarm_layout, as in swarm.init): the first one, in the layout's
# order (minion id order for a {tgt, tgt_type} target), that answers as a manager of a swarm
# with a leader (a dead managers[0] does not stop a deploy):
#   salt-run state.orch swarm.deploy          (test=True predicts the changes)
# Run after swarm.init; images come from the cluster registry (salt-run imagebuild.run).
{%- set layout = salt["pillar.get"]("swarm_layout", "armswarm:swarm") %}
{%- set managers = salt["pillar.get"](layout ~ ":managers", []) %}
{%- set wait = salt["pillar.get"](layout ~ ":answer_timeout", 20) %}
{%- set chosen = namespace(manager=none, tgt=none, tgt_type="list") %}
{#- managers is a list of minion ids (tried in its order) or {tgt: …, tgt_type: …}, expanded by
    the master as swarm.init expands it (tgt_type compound by default; tried in minion id order). #}
{%- if managers is mapping %}
{%-   if managers.get("tgt") is string and managers.get("tgt_type", "") is string and managers | reject("in", ["tgt", "tgt_type"]) | list == [] %}
{%-     set chosen.tgt = managers.tgt %}
{%-     set chosen.tgt_type = managers.get("tgt_type") or "compound" %}
{%-   endif %}
{%- elif managers is not string and managers and managers | reject("string") | list == [] %}
{%-   set chosen.tgt = managers %}
{%- endif %}
{%- if chosen.tgt is not none %}
{%-   set answers = salt["saltutil.cmd"](chosen.tgt, "docker_swarm.state", tgt_type=chosen.tgt_type, timeout=wait) %}
{%-   for minion in (managers if chosen.tgt_type == "list" else answers | sort) %}
{%-     set swarm = (answers.get(minion) or {}).get("ret") %}
{%-     if chosen.manager is none and swarm is mapping and swarm.get("state") == "active" and swarm.get("is_manager") and swarm.get("cluster_id") %}
{%-       set chosen.manager = minion %}
{%-     endif %}
{%-   endfor %}
{%- endif %}
{%- if chosen.tgt is none %}
armswarm-stacks-no-manager:
  test.fail_without_changes:
    - name: {{ layout }}:managers must be a list of minion ids or {tgt, tgt_type} to deploy stacks from
{%- elif chosen.manager is none %}
armswarm-stacks-no-manager:
  test.fail_without_changes:
{%-   set asked = managers | join(", ") if chosen.tgt_type == "list" else chosen.tgt_type ~ " target " ~ chosen.tgt %}
    - name: {{ "no manager of " ~ layout ~ " (" ~ asked ~ ") answers as a manager of a swarm with a leader" }}
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
