{%- from "armnode/map.jinja" import armnode with context %}
{%- set mail = armnode.mail %}
{%- if mail.enabled %}
# A mail relay so cron and alerts reach a person.
armnode-mail-packages-installed:
  pkg.installed:
    - pkgs: {{ armnode.mail_packages[mail.relay] | json }}
    {%- if grains.os_family == "Debian" %}
    - install_recommends: {{ armnode.install_recommends | json }}
    {%- endif %}
    - require:
      - armnode: armnode-settings-valid

armnode-mail-config-managed:
  armnode.mail_relay:
    - relay: {{ mail.relay }}
    - host: {{ mail.host }}
    - port: {{ mail.port }}
    - tls: {{ mail.tls }}
    - sender: {{ mail.get("from") | json }}
    - user: {{ mail.user | json }}
    - password_pillar: {{ mail.password_pillar | json }}
    - root_alias: {{ mail.root_alias | json }}
    - require:
      - pkg: armnode-mail-packages-installed
{%- endif %}
