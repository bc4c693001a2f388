{#- The cluster registry on the node named in pillar armswarm:registry:node:
      salt node1 state.apply registry
    TLS from a cluster CA made by Salt's x509 states on this node; the CA goes to the mine,
    where every node's armnode formula finds it. #}
{%- from "registry/map.jinja" import registry with context %}
{%- set dir = registry.config_dir %}
armswarm-registry-config-dir:
  file.directory:
    - name: {{ dir }}
    - mode: '0750'
    - makedirs: true

armswarm-registry-storage:
  file.directory:
    - name: {{ registry.storage }}
    - makedirs: true

armswarm-registry-ca-key:
  x509.private_key_managed:
    - name: {{ dir }}/ca.key
    - keysize: 3072
    - mode: '0600'
    - require:
      - file: armswarm-registry-config-dir

armswarm-registry-ca:
  x509.certificate_managed:
    - name: {{ dir }}/ca.crt
    - signing_private_key: {{ dir }}/ca.key
    - CN: armswarm registry CA ({{ grains.id }})
    - basicConstraints: critical, CA:true, pathlen:0
    - keyUsage: critical, cRLSign, keyCertSign
    - subjectKeyIdentifier: hash
    - days_valid: {{ registry.ca_days }}
    - days_remaining: 90
    - require:
      - x509: armswarm-registry-ca-key

armswarm-registry-tls-key:
  x509.private_key_managed:
    - name: {{ dir }}/tls.key
    - keysize: 2048
    - mode: '0640'
    - require:
      - file: armswarm-registry-config-dir

armswarm-registry-tls-cert:
  x509.certificate_managed:
    - name: {{ dir }}/tls.crt
    - signing_cert: {{ dir }}/ca.crt
    - signing_private_key: {{ dir }}/ca.key
    - private_key: {{ dir }}/tls.key
    - CN: {{ registry.hostname }}
    - subjectAltName: {{ registry.sans | join(", ") | json }}
    - basicConstraints: critical, CA:false
    - keyUsage: critical, digitalSignature, keyEncipherment
    - extendedKeyUsage: serverAuth
    - days_valid: {{ registry.cert_days }}
    - days_remaining: {{ registry.cert_renew_days }}
    - require:
      - x509: armswarm-registry-ca
      - x509: armswarm-registry-tls-key

armswarm-registry-running:
  docker_registry.running:
    - name: armswarm-registry
    - image: {{ registry.image | json }}
    - port: {{ registry.port }}
    - storage: {{ registry.storage | json }}
    - require:
      - file: armswarm-registry-storage
      - x509: armswarm-registry-tls-cert

armswarm-registry-ca-published:
  docker_registry.ca_published:
    - name: armswarm_registry_ca
    - require:
      - x509: armswarm-registry-ca
