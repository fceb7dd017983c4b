# deploy/ checks: shellcheck of every script, syntax of the Kubernetes manifests and Dockerfile,
# systemd units, and the local multi-replica cluster end to end (2 replicas of TP 1, CPU backend,
# real redis-server and mpirun; it skips with exit 77 only while glm4v-serve is not built).
set(_deploy_dir ${CMAKE_CURRENT_LIST_DIR})
add_test(NAME deploy_shellcheck COMMAND bash ${_deploy_dir}/test_shellcheck.sh ${CMAKE_SOURCE_DIR})
add_test(NAME deploy_manifests COMMAND /usr/bin/python3 ${_deploy_dir}/check_manifests.py
  ${CMAKE_SOURCE_DIR})
add_test(NAME deploy_systemd_units COMMAND bash ${_deploy_dir}/test_systemd_units.sh
  ${CMAKE_SOURCE_DIR})
add_test(NAME deploy_local_cluster COMMAND bash ${_deploy_dir}/test_local_cluster.sh
  ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(deploy_shellcheck deploy_manifests deploy_systemd_units PROPERTIES
  LABELS deploy TIMEOUT 60)
set_tests_properties(deploy_local_cluster PROPERTIES LABELS "deploy;redis" TIMEOUT 300
  SKIP_RETURN_CODE 77 ENVIRONMENT "GLM4V_TESTDATA=${GLM4V_TESTDATA};${GLM4V_MPI_ENV}")
# deploy/slurm's batch scripts on a one-node Slurm started by the test (root; skips with 77 only
# outside CI when it cannot run).
add_test(NAME deploy_slurm COMMAND bash ${_deploy_dir}/test_slurm.sh ${CMAKE_BINARY_DIR}/bin
  ${GLM4V_TESTDATA} ${CMAKE_SOURCE_DIR})
set_tests_properties(deploy_slurm PROPERTIES LABELS "deploy;slurm" TIMEOUT 300 RUN_SERIAL TRUE
  SKIP_RETURN_CODE 77)
# The same across two Slurm nodes on fake hosts (network namespaces): a replica of TP 2 over both.
add_test(NAME deploy_slurm_nodes COMMAND bash ${_deploy_dir}/test_slurm_nodes.sh
  ${CMAKE_BINARY_DIR}/bin ${GLM4V_TESTDATA} ${CMAKE_SOURCE_DIR})
set_tests_properties(deploy_slurm_nodes PROPERTIES LABELS "deploy;slurm;multihost" TIMEOUT 300
  RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
