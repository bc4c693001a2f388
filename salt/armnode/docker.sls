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

armnode-docker-daemon-json:
  file.serialize:
    - name: /etc/docker/daemon.json
    - serializer: json
    - serializer_opts:
      - indent: 2
      - sort_keys: true
    - dataset: {{ daemon | json }}
    - makedirs: true
    - require:
      - pkg: armnode-docker-installed

{%- if docker.registry and docker.registry_ca %}
armnode-docker-registry-ca:
  file.managed:
    - name: /etc/docker/certs.d/{{ docker.registry }}/ca.crt
    - makedirs: true
    - contents: {{ docker.registry_ca | json }}
    - require:
      - pkg: armnode-docker-installed
{%- endif %}

armnode-docker-running:
  service.running:
    - name: docker
    - enable: true
    - watch:
      - file: armnode-docker-daemon-json
