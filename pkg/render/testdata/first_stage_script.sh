#!/bin/bash
# Test stand-in for templates/first_stage_script.sh: uses every field of
# the first-stage context so a renamed field fails the tests.
set -euo pipefail
helper_url={{printf "%q" .HostInfoHelperURL}}
cloud_config_url={{printf "%q" .CloudConfigURL}}
ignition_config_url={{printf "%q" .IgnitionConfigURL}}
install_image_url={{printf "%q" .InstallImageURL}}
set_installed_url={{printf "%q" .SetInstalledURL}}
mayu_url={{printf "%q" .MayuURL}}
mayu_version={{printf "%q" .MayuVersion}}
machine_id={{printf "%q" .MachineID}}
echo "would install from ${install_image_url} and report to ${set_installed_url}"
