{%- from "armnode/map.jinja" import armnode with context %}
{#- Swarm TLS needs correct clocks. A container shares its host's clock and cannot set it
    (systemd-timesyncd refuses to run there): nothing to do in the lab. #}
{%- if armnode.timesync and grains.get("virtual") != "container" %}
{%- if armnode.timesync_package %}
armnode-timesync-installed:
  pkg.installed:
    - name: {{ armnode.timesync_package }}
    - require:
      - armnode: armnode-settings-valid
    {%- if armnode.mail.enabled %}
      # The relay's MTA first: a package recommending a mail transport then finds one, and
      # exim4 is never installed and left behind.
      - pkg: armnode-mail-packages-installed
    {%- endif %}
    - require_in:
      - service: armnode-timesync-running
{%- endif %}

armnode-timesync-running:
  service.running:
    - name: systemd-timesyncd
    - enable: true
{%- endif %}

{%- if armnode.hostname %}
armnode-hostname:
  network.system:
    - hostname: {{ armnode.hostname }}
    - apply_hostname: true
    - retain_settings: true
    - require:
      - armnode: armnode-settings-valid
{%- endif %}
