"""Volume backups on one node.

``backup_policy`` (settings, names, manifests, retention and clean-up decisions: pure logic),
``backup_target`` (the mounted share: listing, publishing, verifying), ``volume_backups``
(volume copies and restores), ``mysql_dumps`` (MySQL/MariaDB dumps) and ``volume_cleanup``
(the daily clean-up).
"""
