{#- The stacks of pillar armswarm:stacks, deployed from one manager:
      salt-run state.orch swarm.deploy      (picks the first manager of armswarm:swarm)
      salt <manager> state.apply swarm.stacks
    armswarm:stacks:
      web:
        compose: salt://stacks/web.yml      # a compose file (version 3)
        context: {tag: "20261122"}          # rendered with Jinja; registry comes from pillar
        prune: true                         # remove services no longer in the file
        force: false                        # true: roll out again every run (re-pushed tags)
        registry_auth_pillar: armswarm:registry   # username/password for private images
        resolve_image: never                # always / changed (default) / never #}
{%- set stacks = salt["pillar.get"]("armswarm:stacks", {}) %}
{%- set registry = salt["pillar.get"]("armswarm:registry:host", "") %}
{%- for name, stack in stacks | dictsort %}
{%-   set context = {"registry": registry} %}
{%-   do context.update(stack.get("context", {})) %}
armswarm-stack-{{ name }}:
  docker_swarm.stack_deployed:
    - name: {{ name | json }}
    - compose: {{ stack.compose | json }}
    - template: {{ stack.get("template", "jinja") | json }}
    - context: {{ context | json }}
    - prune: {{ stack.get("prune", false) | json }}
{%-   if "resolve_image" in stack %}
    - resolve_image: {{ stack.resolve_image | json }}
{%-   endif %}
    - force: {{ stack.get("force", false) | json }}
{%-   if stack.get("registry_auth_pillar") %}
    - registry_auth_pillar: {{ stack.registry_auth_pillar | json }}
{%-   endif %}
    - timeout: {{ stack.get("timeout", 300) }}
{%- endfor %}
{%- if not stacks %}
armswarm-stacks-none:
  test.succeed_without_changes:
    - name: pillar armswarm:stacks is empty
{%- endif %}
