/* elementwise: not written yet */
