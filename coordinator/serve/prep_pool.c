#include "coordinator/serve/prep_pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

_Static_assert(GLM_PREP_ENTRY_ID_LEN == sizeof(((glm_queue_job *)0)->entry_id),
               "GLM_PREP_ENTRY_ID_LEN must match glm_queue_job.entry_id");

typedef struct prep_item {
    struct prep_item *next;
    glm_request *request;
} prep_item;

/* One FIFO list: items waiting for a thread. A second: items being prepared (taken by a
 * thread). A third: items done, waiting for the loop. */
typedef struct prep_list {
    prep_item *head, *tail;
} prep_list;

struct glm_prep_pool {
    const glm_request_env *env;
    pthread_t *threads;
    int n_threads;
    pthread_mutex_t lock;
    pthread_cond_t work; /* signalled when todo grows or on shutdown */
    prep_list todo, running, done;
    size_t in_flight;
    int stopping;
};

static void list_push(prep_list *l, prep_item *it)
{
    it->next = NULL;
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
}

static prep_item *list_pop(prep_list *l)
{
    prep_item *it = l->head;
    if (it) {
        l->head = it->next;
        if (!l->head) l->tail = NULL;
    }
    return it;
}

static void list_remove(prep_list *l, prep_item *it)
{
    prep_item *prev = NULL;
    for (prep_item *at = l->head; at; prev = at, at = at->next) {
        if (at != it) continue;
        if (prev)
            prev->next = at->next;
        else
            l->head = at->next;
        if (l->tail == at) l->tail = prev;
        return;
    }
}

static void *worker(void *arg)
{
    glm_prep_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        prep_item *it = list_pop(&p->todo);
        if (!it) {
            if (p->stopping) break;
            pthread_cond_wait(&p->work, &p->lock);
            continue;
        }
        list_push(&p->running, it);
        pthread_mutex_unlock(&p->lock);
        int slow = p->env->test_slow_prepare_ms;
        if (slow > 0)
            nanosleep(&(struct timespec){slow / 1000, (long)(slow % 1000) * 1000000L}, NULL);
        glm_request_prepare(it->request, p->env);
        pthread_mutex_lock(&p->lock);
        list_remove(&p->running, it);
        list_push(&p->done, it);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

glm_status glm_prep_pool_create(int n_threads, const glm_request_env *env, glm_prep_pool **out,
                                glm_error *err)
{
    *out = NULL;
    glm_prep_pool *p = calloc(1, sizeof(*p));
    if (!p) return glm_fail(err, GLM_ERR_NOMEM, "out of memory for the preparation pool");
    p->env = env;
    p->threads = calloc((size_t)(n_threads > 0 ? n_threads : 1), sizeof(*p->threads));
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    for (int i = 0; p->threads && i < n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) break;
        p->n_threads++;
    }
    if (p->n_threads == 0) {
        glm_prep_pool_destroy(p);
        return glm_fail(err, GLM_ERR_NOMEM, "could not start preparation threads");
    }
    *out = p;
    return GLM_OK;
}

static void free_item(prep_item *it)
{
    glm_request_destroy(it->request);
    free(it);
}

void glm_prep_pool_destroy(glm_prep_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    prep_item *it;
    while ((it = list_pop(&p->todo)))
        free_item(it);
    while ((it = list_pop(&p->done)))
        free_item(it);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}

glm_status glm_prep_pool_submit(glm_prep_pool *p, glm_request *r, glm_error *err)
{
    if (r->seq.state != GLM_JOB_QUEUED)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "a %s request cannot be prepared",
                        glm_job_state_name(r->seq.state));
    prep_item *it = calloc(1, sizeof(*it));
    if (!it) return glm_fail(err, GLM_ERR_NOMEM, "out of memory for a preparation");
    glm_job_transition(&r->seq.state, GLM_JOB_PREPARING);
    it->request = r;
    pthread_mutex_lock(&p->lock);
    list_push(&p->todo, it);
    p->in_flight++;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->lock);
    return GLM_OK;
}

size_t glm_prep_pool_in_flight(glm_prep_pool *p)
{
    pthread_mutex_lock(&p->lock);
    size_t n = p->in_flight;
    pthread_mutex_unlock(&p->lock);
    return n;
}

size_t glm_prep_pool_collect(glm_prep_pool *p, glm_request **out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&p->lock);
    prep_item *it;
    while (n < max && (it = list_pop(&p->done))) {
        out[n++] = it->request;
        p->in_flight--;
        free(it);
    }
    pthread_mutex_unlock(&p->lock);
    return n;
}

size_t glm_prep_pool_entry_ids(glm_prep_pool *p, char (*ids)[GLM_PREP_ENTRY_ID_LEN], size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&p->lock);
    /* entry_id is set before submit and never written by a thread: reading it here is safe */
    const prep_list *lists[3] = {&p->todo, &p->running, &p->done};
    for (int l = 0; l < 3; l++)
        for (const prep_item *it = lists[l]->head; it; it = it->next, n++)
            if (n < max) snprintf(ids[n], GLM_PREP_ENTRY_ID_LEN, "%s", it->request->entry.entry_id);
    pthread_mutex_unlock(&p->lock);
    return n;
}
