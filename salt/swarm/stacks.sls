{#- The stacks of pillar armswarm:stacks, deployed from one manager:
      salt-run state.orch swarm.deploy      (picks the first live manager of armswarm:swarm)
      salt <manager> state.apply swarm.stacks
    armswarm:stacks:
      web:
        compose: salt://stacks/web.yml      # a compose file (version 3), or a path on the manager
        context: {tag: "20261122"}          # rendered with Jinja; registry comes from pillar
        template: jinja                     # the default for salt:// files (local ones: none)
        prune: true                         # remove services no longer in the file
        force: false                        # true: roll out again every run (re-pushed tags)
        registry_auth_pillar: armswarm:registry   # the registry's pull client (clients:pull)
        resolve_image: never                # always / changed (default) / never
        wait: true                          # false: return while the rollout runs
        with_registry_auth: true            # pass registry credentials to the nodes
        timeout: 300                        # seconds (a number: "300" is refused)
    Booleans must be true/false and timeout a number: the state refuses anything else. #}
{%- set stacks = salt["pillar.get"]("armswarm:stacks", {}) %}
{%- set registry = salt["pillar.get"]("armswarm:registry:host", "") %}
{%- for name, stack in stacks | dictsort %}
{%-   set context = {"registry": registry} %}
{%-   do context.update(stack.get("context", {})) %}
{#-   a salt:// file is rendered with Jinja unless template says otherwise; a local one is not #}
{%-   set default_template = "jinja" if stack.compose is string and stack.compose.startswith("salt://") else none %}
armswarm-stack-{{ name }}:
  docker_swarm.stack_deployed:
    - name: {{ name | json }}
    - compose: {{ stack.compose | json }}
    - template: {{ stack.get("template", default_template) | json }}
    - context: {{ context | json }}
    - prune: {{ stack.get("prune", false) | json }}
{%-   if "resolve_image" in stack %}
    - resolve_image: {{ stack.resolve_image | json }}
{%-   endif %}
    - force: {{ stack.get("force", false) | json }}
{%-   if stack.get("registry_auth_pillar") %}
    - registry_auth_pillar: {{ stack.registry_auth_pillar | json }}
{%-   endif %}
{%-   for key in ("wait", "with_registry_auth") if key in stack %}
    - {{ key }}: {{ stack[key] | json }}
{%-   endfor %}
    - timeout: {{ stack.get("timeout", 300) | json }}
{%- endfor %}
{%- if not stacks %}
armswarm-stacks-none:
  test.succeed_without_changes:
    - name: pillar armswarm:stacks is empty
{%- endif %}
