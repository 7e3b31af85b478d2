/*
 * graph_picture.c - draws the graph Autograd records for a small neural network.
 *
 * It builds the loss of a two-layer MLP,
 *
 *     loss = mse_loss(relu(x @ W1 + b1) @ W2 + b2, target)
 *
 *     x: (4,3) input, W1: (3,5), b1: (5), W2: (5,2), b2: (2), target: (4,2), all float64,
 *
 * asks the library for a Graphviz DOT description of the recorded graph (ag_graph_to_dot), and
 * writes it to a file: graph.dot in the current directory, or the path given as the first
 * argument. If Graphviz's `dot` program is installed it also renders the picture as SVG, next to
 * the DOT file (graph.svg for graph.dot). In the picture, operations are ellipses (matmul, add,
 * relu, ...; a composite function such as mse_loss may show as the operations it is made of),
 * the parameters are boxes marked requires_grad, and x and target, which need no gradient, are
 * dashed "constant" boxes; the boxes show shapes and dtypes. Arrows point from inputs to the
 * operations that use them, up to the result.
 *
 * Build (from the repository root, once the library is built):
 *     cc -std=c11 -Wall -Wextra -I include examples/graph_picture.c -o graph_picture \
 *        -L .build/release -lautograd -Wl,-rpath,$PWD/.build/release -lm
 * Run:
 *     ./graph_picture                 # writes graph.dot (and graph.svg if dot is installed)
 *     ./graph_picture /tmp/mlp.dot    # writes /tmp/mlp.dot (and /tmp/mlp.svg)
 *
 * Exits 0 on success, 1 on failure (with a message on stderr).
 */
#include "autograd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every fallible Autograd function returns an ag_status; AG_OK (0) means success. This macro
 * stops the program at the first failure, with the library's description of it. */
#define AG_TRY(call)                                                                     \
    do {                                                                                 \
        ag_status st_ = (call);                                                          \
        if (st_ != AG_OK) {                                                              \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,     \
                    ag_status_name(st_), ag_last_error());                               \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

/* A new float64 tensor of the given shape with reproducible random values in [-1, 1); a
 * parameter (requires_grad) or a constant. */
static ag_tensor random_tensor(const int64_t *shape, int64_t ndim, uint64_t seed, bool parameter) {
    ag_tensor t;
    AG_TRY(ag_tensor_rand_uniform(&t, shape, ndim, -1.0, 1.0, seed, AG_FLOAT64));
    if (parameter) AG_TRY(ag_tensor_set_requires_grad(t, true));
    return t;
}

/* The SVG file's name: the DOT file's name with ".dot" replaced by ".svg" (or ".svg" added). */
static char *svg_path_for(const char *dot_path) {
    size_t n = strlen(dot_path);
    char *svg = malloc(n + 5);
    if (!svg) return NULL;
    memcpy(svg, dot_path, n + 1);
    if (n >= 4 && strcmp(dot_path + n - 4, ".dot") == 0) svg[n - 4] = '\0';
    strcat(svg, ".svg");
    return svg;
}

int main(int argc, char **argv) {
    const char *dot_path = argc > 1 ? argv[1] : "graph.dot";

    /* ------------------------------------------------------------------------------------ */
    /* 1. The network and its loss. Each operation records a node in the graph because one  */
    /*    of its inputs (a parameter) requires grad.                                         */
    /* ------------------------------------------------------------------------------------ */
    ag_tensor x = random_tensor((const int64_t[]){4, 3}, 2, 1, false);
    ag_tensor target = random_tensor((const int64_t[]){4, 2}, 2, 2, false);
    ag_tensor w1 = random_tensor((const int64_t[]){3, 5}, 2, 3, true);
    ag_tensor b1 = random_tensor((const int64_t[]){5}, 1, 4, true);
    ag_tensor w2 = random_tensor((const int64_t[]){5, 2}, 2, 5, true);
    ag_tensor b2 = random_tensor((const int64_t[]){2}, 1, 6, true);

    ag_tensor z1, z1b, h, z2, pred, loss;
    AG_TRY(ag_matmul(&z1, x, w1));        /* (4,3) @ (3,5) -> (4,5)             */
    AG_TRY(ag_add(&z1b, z1, b1));         /* + b1, broadcast over the rows       */
    AG_TRY(ag_relu(&h, z1b));             /* hidden activations, (4,5)           */
    AG_TRY(ag_matmul(&z2, h, w2));        /* (4,5) @ (5,2) -> (4,2)              */
    AG_TRY(ag_add(&pred, z2, b2));        /* + b2                                */
    AG_TRY(ag_mse_loss(&loss, pred, target)); /* mean squared error, a scalar    */

    double loss_value;
    AG_TRY(ag_tensor_item(&loss_value, loss));
    printf("graph_picture: built loss = mse_loss(relu(x @ W1 + b1) @ W2 + b2, target) = %.6f\n", loss_value);

    /* ------------------------------------------------------------------------------------ */
    /* 2. The DOT text. ag_graph_to_dot works like snprintf: ask for the length with a NULL */
    /*    buffer, then call again with room for the text and its terminating NUL.           */
    /* ------------------------------------------------------------------------------------ */
    int64_t length = 0;
    AG_TRY(ag_graph_to_dot(NULL, 0, &length, loss));
    char *text = malloc((size_t)length + 1);
    if (!text) {
        fprintf(stderr, "graph_picture: out of memory\n");
        return 1;
    }
    AG_TRY(ag_graph_to_dot(text, length + 1, &length, loss));

    /* ------------------------------------------------------------------------------------ */
    /* 3. Write it to the file.                                                             */
    /* ------------------------------------------------------------------------------------ */
    FILE *f = fopen(dot_path, "w");
    if (!f) {
        perror(dot_path);
        free(text);
        return 1;
    }
    size_t written = fwrite(text, 1, (size_t)length, f);
    if (fclose(f) != 0 || written != (size_t)length) {
        fprintf(stderr, "graph_picture: could not write %s\n", dot_path);
        free(text);
        return 1;
    }
    printf("graph_picture: wrote %s (%lld bytes of DOT)\n", dot_path, (long long)length);
    free(text);

    /* ------------------------------------------------------------------------------------ */
    /* 4. Render it, if Graphviz is installed.                                              */
    /* ------------------------------------------------------------------------------------ */
    int status = 0;
    char *svg_path = svg_path_for(dot_path);
    char command[4096];
    if (!svg_path || snprintf(command, sizeof command, "dot -Tsvg '%s' -o '%s'", dot_path, svg_path) >=
                         (int)sizeof command) {
        fprintf(stderr, "graph_picture: the path is too long\n");
        status = 1;
    } else if (system("command -v dot >/dev/null 2>&1") != 0) {
        printf("graph_picture: Graphviz's dot program is not installed, so no picture was rendered;\n"
               "               install graphviz and run: %s\n", command);
    } else if (strchr(dot_path, '\'') != NULL) {
        /* the command quotes the paths with '...'; a quote inside would break it */
        printf("graph_picture: not rendering: the path contains a quote character\n");
    } else if (system(command) != 0) {
        fprintf(stderr, "graph_picture: %s failed\n", command);
        status = 1;
    } else {
        printf("graph_picture: rendered %s with: %s\n", svg_path, command);
    }
    free(svg_path);

    /* ------------------------------------------------------------------------------------ */
    /* 5. Free every handle: that releases the whole graph.                                 */
    /* ------------------------------------------------------------------------------------ */
    ag_tensor all[] = {x, target, w1, b1, w2, b2, z1, z1b, h, z2, pred, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) AG_TRY(ag_tensor_free(all[i]));
    int64_t live = -1;
    AG_TRY(ag_live_handle_count(&live));
    if (live != 0) {
        fprintf(stderr, "graph_picture: %lld handles still live\n", (long long)live);
        status = 1;
    }
    return status;
}
