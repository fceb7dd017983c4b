/* The version string servers publish in their liveness key. */
#ifndef GLM4V_SERVER_VERSION_H
#define GLM4V_SERVER_VERSION_H
const char *glm4v_version(void);
#endif
