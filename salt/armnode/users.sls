{%- from "armnode/map.jinja" import armnode with context %}
{%- set admin = armnode.admin %}
armnode-admin-user-present:
  user.present:
    - name: {{ admin.name }}
    - shell: {{ admin.shell }}
    - home: /home/{{ admin.name }}
    - groups: [{{ armnode.admin_group }}]
    {%- if admin.password_hash %}
    - password: {{ admin.password_hash | json }}
    - hash_password: false
    {%- endif %}
    - require:
      - armnode: armnode-settings-valid
      - pkg: armnode-packages-installed

{%- if admin.ssh_keys %}
armnode-admin-ssh-keys-present:
  ssh_auth.manage:
    - user: {{ admin.name }}
    - ssh_keys: {{ admin.ssh_keys | json }}
    - require:
      - user: armnode-admin-user-present
{%- endif %}

armnode-admin-sudoers-managed:
  file.managed:
    - name: /etc/sudoers.d/armswarm-admin
    - mode: '0440'
    - contents: "{{ admin.name }} ALL=(ALL:ALL) {{ 'NOPASSWD: ' if admin.sudo_nopasswd else '' }}ALL\n"
    - check_cmd: /usr/sbin/visudo -cf
    - require:
      - user: armnode-admin-user-present

{%- if armnode.remove_default_users %}
{#- Never the admin, never someone logged in now (who). #}
{%- set logged_in = [] %}
{%- for line in salt["cmd.run_stdout"]("who", python_shell=False).splitlines() %}
{%- if line.strip() %}{% do logged_in.append(line.split()[0]) %}{% endif %}
{%- endfor %}
{%- set candidates = armnode.default_users | list %}
{#- Armbian asks for its first user at first login (UID 1000): that one is a default user too. #}
{%- if salt["file.file_exists"]("/etc/armbian-release") %}
{%- for name in salt["user.list_users"]() %}
{%- if salt["user.info"](name).get("uid") == 1000 and name not in candidates %}
{%- do candidates.append(name) %}
{%- endif %}
{%- endfor %}
{%- endif %}
{%- set removable = [] %}
{%- for name in candidates %}
{%- if name != admin.name and name not in logged_in and salt["user.info"](name) %}
{%- do removable.append(name) %}
{%- endif %}
{%- endfor %}
{#- Never lock everyone out: the admin needs a password or a key (pillar, or on the node). #}
{%- set lockout = salt["armnode.ssh_lockout"]() if removable else "" %}
{%- if lockout %}
armnode-default-users-kept:
  test.fail_without_changes:
    - name: {{ lockout | json }}
{%- else %}
{%- for name in removable %}
armnode-default-user-{{ name }}-absent:
  user.absent:
    - name: {{ name }}
    - purge: false
    - require:
      - user: armnode-admin-user-present
      {%- if admin.ssh_keys %}
      - ssh_auth: armnode-admin-ssh-keys-present
      {%- endif %}
{%- endfor %}
{%- endif %}
{%- endif %}
