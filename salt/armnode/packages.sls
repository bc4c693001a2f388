{%- from "armnode/map.jinja" import armnode with context %}
{%- set boot_tools = armnode.boot_tools.get(armnode.boot_flavour, []) %}
{%- set mirrors = armnode.mirrors %}
{%- if grains.os_family == "Debian" and mirrors.get("debian") %}
armnode-mirrors-managed:
  armnode.apt_mirror:
    - name: /etc/apt
    - managed: {{ armnode.mirror_file | json }}
    - debian: {{ mirrors.debian | json }}
    - security: {{ mirrors.get("security") | json }}
    - components: {{ mirrors.get("components", "main contrib non-free-firmware") | json }}
    - codename: {{ grains.oscodename | json }}
    - require:
      - armnode: armnode-settings-valid
    - require_in:
      - pkg: armnode-packages-installed
      {%- if armnode.mail.enabled %}
      - pkg: armnode-mail-packages-installed
      {%- endif %}
{%- elif grains.os_family == "Arch" and mirrors.get("arch") %}
armnode-mirrors-managed:
  file.managed:
    - name: {{ armnode.mirror_file }}
    - contents: |
        # Managed by Salt (armnode)
        {%- for url in mirrors.arch %}
        {#- pacman fills in $arch and $repo: a whole Server URL (one with $repo, as
            Arch Linux ARM's mirrorlist writes them) stays, a base URL gets /$arch/$repo #}
        Server = {{ url if "$repo" in url else url.rstrip("/") ~ "/$arch/$repo" }}
        {%- endfor %}
    - require:
      - armnode: armnode-settings-valid
    - require_in:
      - pkg: armnode-packages-installed
      {%- if armnode.mail.enabled %}
      - pkg: armnode-mail-packages-installed
      {%- endif %}
{%- endif %}

armnode-packages-installed:
  pkg.installed:
    - pkgs: {{ (armnode.packages + armnode.os_packages + boot_tools) | unique | list | json }}
    {%- if grains.os_family == "Debian" %}
    - install_recommends: {{ armnode.install_recommends | json }}
    {%- endif %}
    - require:
      - armnode: armnode-settings-valid
    {%- if armnode.mail.enabled %}
      # The relay's MTA first: a package recommending a mail transport then finds one, and
      # exim4 is never installed and left behind.
      - pkg: armnode-mail-packages-installed
    {%- endif %}

{%- for name, content in armnode.scripts.items() %}
armnode-script-{{ name }}-managed:
  file.managed:
    - name: /usr/local/sbin/{{ name }}
    - mode: '0755'
    - contents: {{ content | json }}
    - require:
      - armnode: armnode-settings-valid
{%- endfor %}

armnode-cron-running:
  service.running:
    - name: {{ armnode.cron_service }}
    - enable: true
    - require:
      - pkg: armnode-packages-installed
