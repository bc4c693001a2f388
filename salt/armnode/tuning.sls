{%- from "armnode/map.jinja" import armnode with context %}
{%- set tuning = armnode.tuning %}
# Optional tuning, all off by default.
{%- if tuning.zram.enabled %}
armnode-zram-installed:
  pkg.installed:
    - name: {{ armnode.zram_package }}
    - require:
      - armnode: armnode-settings-valid
    {%- if armnode.mail.enabled %}
      # The relay's MTA first: a package recommending a mail transport then finds one, and
      # exim4 is never installed and left behind.
      - pkg: armnode-mail-packages-installed
    {%- endif %}

armnode-zram-config:
  file.managed:
    - name: {{ armnode.zram_config }}
    - contents: |
        # Managed by Salt (armnode)
        {%- if grains.os_family == "Arch" %}
        [zram0]
        zram-size = ram * {{ tuning.zram.percent }} / 100
        compression-algorithm = {{ tuning.zram.algorithm }}
        {%- else %}
        ALGO={{ tuning.zram.algorithm }}
        PERCENT={{ tuning.zram.percent }}
        {%- endif %}
    - require:
      - pkg: armnode-zram-installed

armnode-zram-running:
  service.running:
    - name: {{ armnode.zram_service }}
    - enable: true
    - watch:
      - file: armnode-zram-config
{%- endif %}

{%- if tuning.root_mount_options %}
armnode-root-mount-options:
  armnode.mount_options:
    - name: /
    - options: {{ tuning.root_mount_options | json }}
    - require:
      - armnode: armnode-settings-valid
{%- endif %}

{%- if tuning.cpu_governor %}
armnode-cpu-governor:
  armnode.cpu_governor:
    - governor: {{ tuning.cpu_governor }}
    - require:
      - armnode: armnode-settings-valid
{%- endif %}

{%- if tuning.irq_affinity.enabled %}
armnode-irq-affinity:
  armnode.irq_affinity:
    - pattern: {{ tuning.irq_affinity.pattern | json }}
    {%- if tuning.irq_affinity.cpus %}
    - cpus: {{ tuning.irq_affinity.cpus | json }}
    {%- endif %}
    - require:
      - armnode: armnode-settings-valid

armnode-irq-affinity-unit-enabled:
  service.enabled:
    - name: armswarm-irq-affinity
    - require:
      - armnode: armnode-irq-affinity
{%- endif %}
