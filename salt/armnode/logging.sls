{%- from "armnode/map.jinja" import armnode with context %}
# Flash-friendly logging: the journal in RAM, rotated logs compressed.
armnode-journald-config-managed:
  file.managed:
    - name: /etc/systemd/journald.conf.d/armswarm.conf
    - makedirs: true
    - contents: |
        # Managed by Salt (armnode)
        [Journal]
        {%- for key, value in armnode.journald | dictsort %}
        {{ key }}={{ value }}
        {%- endfor %}
    - require:
      - armnode: armnode-settings-valid

armnode-journald-restarted:
  module.wait:
    - name: service.restart
    - m_name: systemd-journald
    - watch:
      - file: armnode-journald-config-managed

{%- if armnode.logrotate_compress %}
armnode-logrotate-compress:
  armnode.logrotate_compress:
    - name: /etc/logrotate.conf
    - require:
      - pkg: armnode-packages-installed
{%- endif %}
