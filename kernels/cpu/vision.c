/* vision: not written yet */
