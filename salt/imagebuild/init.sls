# Build the image tree into the registry from an orchestration (e.g. a schedule on the master):
#   salt-run state.orch imagebuild
#   salt-run state.orch imagebuild pillar='{"imagebuild": {"source": "salt://images"}}'
# Without a source here the runner uses armswarm:imagebuild:source.
{%- set source = salt['pillar.get']('imagebuild:source', '') %}
armswarm-imagebuild-run:
  salt.runner:
    - name: imagebuild.run
{%- if source %}
    - source: {{ source | json }}
{%- endif %}
