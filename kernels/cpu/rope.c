/* rope: not written yet */
