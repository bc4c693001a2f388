{%- from "backup/map.jinja" import backup with context %}
{#- cron rather than Salt's scheduler: fixed times of day need no extra Python package
    (croniter) on the minion, and cron mails failures through the node's relay. #}
{%- set jobs = {
  "volumes": ("backup.run", backup.schedule.backup, true),
  "mysql": ("backup.mysql_dump", backup.schedule.mysql, backup.mysql.enabled),
  "cleanup": ("backup.cleanup", backup.schedule.cleanup, backup.cleanup.enabled),
} %}
{%- for job, (fun, spec, enabled) in jobs | dictsort %}
{%- set command = "PATH=" ~ backup.cron_path ~ " salt-call --retcode-passthrough --out=quiet "
                  ~ fun ~ " || echo 'armswarm: " ~ fun ~ " failed, run salt-call " ~ fun
                  ~ " to see why'" %}
{%- if backup.schedule.enabled and enabled %}
{%- set fields = (spec ~ "").split() %}
{%- if fields | length != 5 %}{% set fields = ["*", "*", "*", "*", "*"] %}{% endif %}
backup-cron-{{ job }}:
  cron.present:
    - name: {{ command | json }}
    - identifier: armswarm-backup-{{ job }}
    - user: root
    - minute: '{{ fields[0] }}'
    - hour: '{{ fields[1] }}'
    - daymonth: '{{ fields[2] }}'
    - month: '{{ fields[3] }}'
    - dayweek: '{{ fields[4] }}'
    - require:
      - backup: backup-settings-valid
{%- else %}
backup-cron-{{ job }}:
  cron.absent:
    - name: {{ command | json }}
    - identifier: armswarm-backup-{{ job }}
    - user: root
    - require:
      - backup: backup-settings-valid
{%- endif %}
{%- endfor %}
