/* backend_cpu: not written yet */
