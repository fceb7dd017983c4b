/* step_plan: not written yet */
