{%- from "armnode/map.jinja" import armnode with context %}
{%- set docker = armnode.docker %}
{%- set daemon = salt["slsutil.merge"]({}, docker.daemon) %}
{%- if docker.data_root %}{% do daemon.update({"data-root": docker.data_root}) %}{% endif %}
{#- Only when asked: a registry is trusted through its CA below, not by dropping TLS. #}
{%- if docker.insecure_registries %}
{%- do daemon.update({"insecure-registries": docker.insecure_registries}) %}
{%- endif %}
armnode-docker-installed:
  pkg.installed:
    - name: {{ armnode.docker_package }}
    - require:
      - armnode: armnode-settings-valid
    {%- if armnode.mail.enabled %}
      # The relay's MTA first: a package recommending a mail transport then finds one, and
      # exim4 is never installed and left behind.
      - pkg: armnode-mail-packages-installed
    {%- endif %}

{#- Checked before it is written (dockerd --validate, else known keys); in a swarm a change
    waits for salt-run armnode_docker.rolling_restart (one node at a time, quorum kept). #}
armnode-docker-daemon-json:
  armnode.docker_daemon_config:
    - name: /etc/docker/daemon.json
    - daemon: {{ daemon | json }}
    - require:
      - pkg: armnode-docker-installed

{#- The cluster registry: armnode:docker:registry, else armswarm:registry:host; its CA from
    pillar, else from the mine where the registry formula put it. #}
{%- set registry = docker.registry or salt["pillar.get"]("armswarm:registry:host", "") %}
{%- set registry_ca = docker.registry_ca %}
{%- set registry_node = salt["pillar.get"]("armswarm:registry:node", "") %}
{%- if registry and not registry_ca and registry_node %}
{%-   set mined = salt["mine.get"](registry_node, "armswarm_registry_ca") or {} %}
{%-   set registry_ca = mined.get(registry_node) or "" %}
{%- endif %}
{%- if registry and registry_ca %}
armnode-docker-registry-ca:
  file.managed:
    - name: /etc/docker/certs.d/{{ registry }}/ca.crt
    - makedirs: true
    - contents: {{ registry_ca | json }}
    - require:
      - pkg: armnode-docker-installed
{%- endif %}

armnode-docker-running:
  service.running:
    - name: docker
    - enable: true
    - require:
      - armnode: armnode-docker-daemon-json
