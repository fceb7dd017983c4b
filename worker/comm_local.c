/* comm_local: not written yet */
