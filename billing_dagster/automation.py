"""When the unpartitioned views refresh themselves (the ``billing_automation`` sensor)."""

import dagster as dg

# after any upstream asset is updated, once nothing upstream or of its own is in progress
AFTER_UPSTREAM = (dg.AutomationCondition.any_deps_updated()
                  & ~dg.AutomationCondition.any_deps_in_progress()
                  & ~dg.AutomationCondition.in_progress())
