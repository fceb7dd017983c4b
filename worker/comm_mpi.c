/* comm_mpi: not written yet */
