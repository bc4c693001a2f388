{%- from "backup/map.jinja" import backup with context %}
# The restore-on-first-start helper, for manual use and for image builds on the node
# (image authors COPY it into their images, see docs/backup.rst).
backup-restore-helper:
  file.managed:
    - name: {{ backup.helper_path }}
    - source: salt://backup/files/armswarm-restore
    - mode: '0755'
    - makedirs: true
    - require:
      - backup: backup-settings-valid
