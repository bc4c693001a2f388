# Every other armnode state requires this one: bad settings stop the run before any change.
armnode-settings-valid:
  armnode.settings_valid: []
