# Every other backup state requires this one: bad settings stop the run before any change.
backup-settings-valid:
  backup.settings_valid: []
