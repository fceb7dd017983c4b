/* The one error check for MPI calls in the worker: a failing call returns GLM_ERR_COMM from the
 * enclosing function, with the call, the place and MPI's own message in *err. */
#ifndef GLM4V_MPI_CHECK_H
#define GLM4V_MPI_CHECK_H

#include <mpi.h>

#include "common/status.h"

#define GLM_MPI_CHECK(err, call)                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MPI_SUCCESS) {                                                                  \
            char msg_[MPI_MAX_ERROR_STRING];                                                       \
            int len_ = 0;                                                                          \
            MPI_Error_string(rc_, msg_, &len_);                                                    \
            return glm_fail((err), GLM_ERR_COMM, "%s (%s:%d): %s", #call, __FILE__, __LINE__,      \
                            msg_);                                                                 \
        }                                                                                          \
    } while (0)

#endif
