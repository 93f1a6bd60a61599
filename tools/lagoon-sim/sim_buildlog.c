/*
 * sim_buildlog: a Lagoon-like build log with planted secrets. The lines
 * follow the shape of build-deploy-tool output; the secrets sit where real
 * builds leak them: a variable dump of a debugging build step, a curl
 * call with its Authorization header echoed, a deploy key printed by a
 * careless script.
 */
#include "sim_buildlog.h"

#include <stdbool.h>
#include <string.h>

/* Not a real key: base64 of fixed bytes, long enough to look like one. */
static const char *const pem_lines[] = {
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACBzaW11bGF0ZWQtZGVwbG95LWtleS1ub3QtcmVhbC0wMDAxAAAAmHNpbS1r",
    "ZXktbWF0ZXJpYWwtZm9yLXJlZGFjdGlvbi10ZXN0cy1vbmx5LXNpbXVsYXRlZC1kZXBs",
    "-----END OPENSSH PRIVATE KEY-----",
};

static void line(rw_sim_buf_t *b, const char *s)
{
    rw_sim_buf_puts(b, s);
    rw_sim_buf_puts(b, "\n");
}

static void head(rw_sim_buf_t *b, const rw_sim_log_in_t *in)
{
    rw_sim_buf_printf(b,
                      "##############################################\n"
                      "BEGIN Initial Setup\n"
                      "##############################################\n"
                      "Using build image uselagoon/build-deploy-image\n"
                      "LAGOON_BUILD_NAME=%s\n"
                      "PROJECT=%.*s ENVIRONMENT=%.*s\n",
                      in->build_name, (int)in->project_len, in->project,
                      (int)in->environment_len, in->environment);
    line(b, "+ git init /kubectl-build-deploy/git");
    rw_sim_buf_printf(b,
                      "+ git fetch --depth=1 origin refs/heads/%.*s\n"
                      "From ssh://git.example.com/%.*s\n"
                      " * branch            %.*s -> FETCH_HEAD\n"
                      "+ git checkout FETCH_HEAD\n"
                      "HEAD is now at 4f1c2d9 Merge pull request #812\n",
                      (int)in->environment_len, in->environment,
                      (int)in->project_len, in->project,
                      (int)in->environment_len, in->environment);
    line(b, "##############################################");
    line(b, "BEGIN Configure Variables");
    line(b, "##############################################");
    for (size_t i = 0; i < in->n_vars; i++)
        if (in->vars[i].name && in->vars[i].value)
            rw_sim_buf_printf(b, "Build variable %s=%s\n", in->vars[i].name,
                              in->vars[i].value);
    rw_sim_buf_printf(b,
                      "+ curl -sS -H 'Authorization: Bearer %s' "
                      "https://api.example.com/hooks/pre-build\n",
                      in->bearer ? in->bearer : "");
    line(b, "pre-build hook: ok");
    line(b, "+ cat /var/run/secrets/deploy/id_ed25519");
    for (size_t i = 0; i < sizeof(pem_lines) / sizeof(pem_lines[0]); i++)
        line(b, pem_lines[i]);
    line(b, "##############################################");
    line(b, "BEGIN Image Builds");
    line(b, "##############################################");
    line(b, "Building cli");
    line(b, "#1 [internal] load build definition from cli.dockerfile");
    line(b, "#2 [internal] load metadata for docker.io/uselagoon/php-8.3-cli");
    line(b, "#3 [1/6] FROM docker.io/uselagoon/php-8.3-cli:latest");
    line(b, "#4 [2/6] COPY composer.* /app/");
    line(b, "#5 [3/6] RUN composer install --no-dev");
    line(b, "#5 12.4 Installing dependencies from lock file");
    line(b, "#6 [4/6] COPY . /app");
    line(b, "Building nginx");
    line(b, "#7 [1/2] FROM docker.io/uselagoon/nginx-drupal:latest");
    line(b, "Building php");
    line(b, "#8 [1/2] FROM docker.io/uselagoon/php-8.3-fpm:latest");
}

static void tail(rw_sim_buf_t *b, const char *status)
{
    if (strcmp(status, "failed") == 0) {
        line(b, "#9 [5/6] RUN drush deploy --yes");
        line(b, "#9 41.2 [error]  SQLSTATE[HY000] [2002] Connection refused");
        line(b, "#9 ERROR: process \"/bin/sh -c drush deploy --yes\" did not "
                "complete successfully: exit code: 1");
        line(b, "##############################################");
        line(b, "Build failed");
        line(b, "##############################################");
        return;
    }
    line(b, "##############################################");
    line(b, "BEGIN Image Push");
    line(b, "##############################################");
    line(b, "Pushing cli to harbor.example.com: digest sha256:5e1b0c7d");
    line(b, "Pushing nginx to harbor.example.com: digest sha256:9a4f3e21");
    line(b, "Pushing php to harbor.example.com: digest sha256:c37d88b0");
    if (strcmp(status, "cancelled") == 0) {
        line(b, "Build cancelled");
        return;
    }
    line(b, "##############################################");
    line(b, "BEGIN Deployment Rollout");
    line(b, "##############################################");
    line(b, "deployment.apps/cli rolled out");
    line(b, "deployment.apps/nginx rolled out");
    line(b, "Build and Deploy complete");
}

void rw_sim_build_log(rw_sim_buf_t *b, const rw_sim_log_in_t *in)
{
    size_t start = b->len;
    bool done = strcmp(in->status, "running") != 0;
    long long n = 0;

    head(b, in);
    if (!done)
        return;
    /* Padding looks like a chatty build step (npm, composer), numbered so
     * that a cut log shows where it starts. */
    while (in->pad_bytes > 0 && (long long)(b->len - start) < in->pad_bytes &&
           !rw_sim_buf_failed(b)) {
        rw_sim_buf_printf(b,
                          "#5 %lld.%03lld npm WARN deprecated package-%06lld"
                          "@1.0.%lld: this version is no longer supported, "
                          "please update to a newer one\n",
                          n / 1000, n % 1000, n, n % 97);
        n++;
    }
    tail(b, in->status);
}
