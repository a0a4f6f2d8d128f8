/* The I/O adapters against the real thing: files on disk (ranges, truncation,
 * fsync before finish, open errors) and libuv sockets (TCP on 127.0.0.1, a
 * pipe over a socketpair), including a peer that goes away mid-stream. */
#include "stream_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static int make_tmpdir(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rw_io_test_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    /* libuv opens process-wide descriptors with the first loop: open them now
     * so that counting descriptors per test sees only what the test did. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_loop_close(&loop);
    return 0;
}

static int remove_tmpdir(void **state)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char path[512];
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(tmpdir);
    return 0;
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

/* Writes n pattern bytes (byte i = i * 7 + i / 251) to a new file; returns them. */
static unsigned char *make_file(const char *path, size_t n)
{
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 7 + i / 251);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
    return data;
}

static int done_calls, done_err;
static void on_done(rw_pipeline_t *p, int err)
{
    done_calls++;
    done_err = err;
}

static int setup(void **state)
{
    done_calls = 0;
    done_err = 1;
    return 0;
}

/* ---- files ---- */

static void file_readable_reads_a_byte_range(void **state)
{
    char path[512];
    snprintf(path, sizeof path, "%s/range", tmpdir);
    size_t n = 1000000;
    unsigned char *data = make_file(path, n);
    int fds = open_fds();
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_file_readable_t f;
    assert_int_equal(rw_file_readable_open(&loop, &f, path, 1000, 300000, 4096, NULL), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.copy = malloc(300000);
    k.copy_cap = 300000;
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline(&p, on_done, &f.stream, &k.stream, NULL), 0);
    run_bounded(&loop, 100000);
    assert_int_equal(done_err, 0);
    assert_int_equal(k.bytes, 300000);
    assert_memory_equal(k.copy, data + 1000, 300000);
    assert_int_equal(k.writes, (300000 + 4095) / 4096);
    rw_stream_close(&f.stream, NULL);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 100);
    finish_loop(&loop);
    assert_int_equal(open_fds(), fds); /* the adapter closed the file it opened */
    free(k.copy);
    free(data);
}

static void file_readable_over_fd_to_eof(void **state)
{
    char path[512];
    snprintf(path, sizeof path, "%s/whole", tmpdir);
    size_t n = 200001;
    unsigned char *data = make_file(path, n);
    int fd = open(path, O_RDONLY);
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_file_readable_t f;
    assert_int_equal(rw_file_readable_init(&loop, &f, fd, 1, -1, 0, NULL), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.copy = malloc(n);
    k.copy_cap = n;
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline(&p, on_done, &f.stream, &k.stream, NULL), 0);
    run_bounded(&loop, 100000);
    assert_int_equal(done_err, 0);
    assert_int_equal(k.bytes, n - 1);
    assert_memory_equal(k.copy, data + 1, n - 1);
    rw_stream_close(&f.stream, NULL);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 100);
    assert_true(fcntl(fd, F_GETFD) >= 0); /* an fd we own stays open */
    close(fd);
    finish_loop(&loop);
    free(k.copy);
    free(data);
}

static void file_readable_errors(void **state)
{
    char path[512];
    snprintf(path, sizeof path, "%s/short", tmpdir);
    free(make_file(path, 1000));
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_file_readable_t f;
    test_sink_t k;
    rw_pipeline_t p;
    /* A range past the end of the file: the file changed under us. */
    assert_int_equal(rw_file_readable_open(&loop, &f, path, 500, 1000, 256, NULL), 0);
    test_sink_init(&loop, &k, 0);
    assert_int_equal(rw_pipeline(&p, on_done, &f.stream, &k.stream, NULL), 0);
    run_bounded(&loop, 100000);
    assert_int_equal(done_err, RW_ETRUNC);
    assert_int_equal(k.bytes, 500);
    rw_stream_close(&f.stream, NULL);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);

    /* (memory is reused only after close: new handles for the second run) */
    rw_file_readable_t f2;
    test_sink_t k2;
    snprintf(path, sizeof path, "%s/missing", tmpdir);
    assert_int_equal(rw_file_readable_open(&loop, &f2, path, 0, -1, 0, NULL), 0);
    test_sink_init(&loop, &k2, 0);
    assert_int_equal(rw_pipeline(&p, on_done, &f2.stream, &k2.stream, NULL), 0);
    run_bounded(&loop, 100000);
    assert_int_equal(done_err, UV_ENOENT);
    rw_stream_close(&f2.stream, NULL);
    rw_stream_close(&k2.stream, NULL);
    test_sink_close_handle(&k2);
    rw_file_readable_t f3;
    assert_int_equal(rw_file_readable_open(&loop, &f3, path, -1, -1, 0, NULL), UV_EINVAL);
    assert_int_equal(rw_file_readable_init(&loop, &f3, -1, 0, -1, 0, NULL), UV_EINVAL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void file_readable_closed_mid_read(void **state)
{
    char path[512];
    snprintf(path, sizeof path, "%s/big", tmpdir);
    free(make_file(path, 4000000));
    int fds = open_fds();
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_file_readable_t f;
    assert_int_equal(rw_file_readable_open(&loop, &f, path, 0, -1, 1024, NULL), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.destroy_at = 10;
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline(&p, on_done, &f.stream, &k.stream, NULL), 0);
    run_bounded(&loop, 100000);
    assert_int_equal(done_calls, 1);
    assert_int_equal(done_err, RW_EPREMATURE);
    int closed = 0;
    f.stream.data = &closed;
    rw_stream_close(&f.stream, on_closed_count);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 1000);
    assert_int_equal(closed, 1);
    finish_loop(&loop);
    assert_int_equal(open_fds(), fds);
}

static off_t size_at_finish;
static char finish_path[512];
static void on_file_finish(rw_stream_t *s)
{
    struct stat st;
    assert_int_equal(stat(finish_path, &st), 0);
    size_at_finish = st.st_size;
}
static const rw_stream_events_t finish_events = {.on_finish = on_file_finish};

static void file_writable_has_everything_on_disk_at_finish(void **state)
{
    snprintf(finish_path, sizeof finish_path, "%s/out", tmpdir);
    int fds = open_fds();
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 3000000, 65536, 0);
    rw_file_writable_t w;
    assert_int_equal(rw_file_writable_open(&loop, &w, finish_path,
                                           UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC, 0600,
                                           NULL),
                     0);
    rw_stream_listen(&w.stream, &finish_events);
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline(&p, on_done, &src.stream, &w.stream, NULL), 0);
    run_bounded(&loop, 100000);
    assert_int_equal(done_err, 0);
    assert_int_equal(size_at_finish, 3000000);
    rw_stream_close(&src.stream, NULL);
    rw_stream_close(&w.stream, NULL);
    run_bounded(&loop, 100);
    unsigned char *back = malloc(3000000);
    int fd = open(finish_path, O_RDONLY);
    assert_int_equal(read(fd, back, 3000000), 3000000);
    close(fd);
    for (size_t i = 0; i < 3000000; i += 4099)
        assert_int_equal(back[i], (unsigned char)('a' + (int)(i / 65536)));
    free(back);

    /* An empty body still creates (and syncs) the file. */
    snprintf(finish_path, sizeof finish_path, "%s/empty", tmpdir);
    rw_file_writable_t w2;
    assert_int_equal(rw_file_writable_open(&loop, &w2, finish_path,
                                           UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC, 0600,
                                           NULL),
                     0);
    rw_stream_listen(&w2.stream, &finish_events);
    size_at_finish = -1;
    rw_writable_end(&w2.stream);
    run_bounded(&loop, 1000);
    assert_true(rw_writable_finished(&w2.stream));
    assert_int_equal(size_at_finish, 0);
    rw_stream_close(&w2.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
    assert_int_equal(open_fds(), fds);
}

static void file_writable_open_error_stops_source(void **state)
{
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/dir", tmpdir);
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 3000000, 65536, 0);
    rw_file_writable_t w;
    assert_int_equal(
        rw_file_writable_open(&loop, &w, path, UV_FS_O_WRONLY | UV_FS_O_CREAT, 0600, NULL), 0);
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline(&p, on_done, &src.stream, &w.stream, NULL), 0);
    run_bounded(&loop, 100000);
    assert_int_equal(done_err, UV_ENOENT);
    assert_int_equal(src.destroys, 1);
    assert_int_equal(src.destroy_err, UV_ENOENT);
    rw_stream_close(&src.stream, NULL);
    rw_stream_close(&w.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

/* ---- sockets ---- */

typedef struct tcp_pair_s {
    uv_tcp_t server, client, accepted;
    uv_connect_t connect;
    bool connected, accepted_ok;
} tcp_pair_t;

static void on_connection(uv_stream_t *server, int status)
{
    tcp_pair_t *t = server->data;
    assert_int_equal(status, 0);
    uv_tcp_init(server->loop, &t->accepted);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&t->accepted), 0);
    t->accepted_ok = true;
}

static void on_connect(uv_connect_t *req, int status)
{
    tcp_pair_t *t = req->data;
    assert_int_equal(status, 0);
    t->connected = true;
}

/* A connected pair of TCP sockets on 127.0.0.1 (a free port). */
static void tcp_pair_open(uv_loop_t *loop, tcp_pair_t *t)
{
    memset(t, 0, sizeof(*t));
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &t->server);
    t->server.data = t;
    assert_int_equal(uv_tcp_bind(&t->server, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&t->server, 8, on_connection), 0);
    struct sockaddr_storage name;
    int len = sizeof name;
    uv_tcp_getsockname(&t->server, (struct sockaddr *)&name, &len);
    uv_tcp_init(loop, &t->client);
    t->connect.data = t;
    assert_int_equal(uv_tcp_connect(&t->connect, &t->client, (struct sockaddr *)&name, on_connect),
                     0);
    for (int i = 0; i < 1000 && !(t->connected && t->accepted_ok); i++)
        uv_run(loop, UV_RUN_ONCE);
    assert_true(t->connected && t->accepted_ok);
}

static void tcp_pair_close(tcp_pair_t *t)
{
    uv_close((uv_handle_t *)&t->server, NULL);
    if (!uv_is_closing((uv_handle_t *)&t->client))
        uv_close((uv_handle_t *)&t->client, NULL);
    if (!uv_is_closing((uv_handle_t *)&t->accepted))
        uv_close((uv_handle_t *)&t->accepted, NULL);
}

static int server_done, server_err = 1;
static void on_server_done(rw_pipeline_t *p, int err)
{
    server_done++;
    server_err = err;
}

static void tcp_carries_a_stream_both_ways_with_digests(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tcp_pair_t t;
    tcp_pair_open(&loop, &t);
    /* client: source -> sha256 -> socket writable (shutdown at end) */
    test_src_t src;
    test_src_init(&loop, &src, 5000000, 10000, 0);
    rw_sha256_t h1, h2;
    assert_int_equal(rw_sha256_init(&loop, &h1, NULL), 0);
    rw_uv_writable_t w;
    assert_int_equal(rw_uv_writable_init(&loop, &w, (uv_stream_t *)&t.client, false, NULL), 0);
    rw_pipeline_t p1;
    assert_int_equal(rw_pipeline(&p1, on_done, &src.stream, &h1.stream, &w.stream, NULL), 0);
    /* server: socket readable -> sha256 -> sink */
    rw_uv_readable_t r;
    assert_int_equal(rw_uv_readable_init(&loop, &r, (uv_stream_t *)&t.accepted, 16384, NULL), 0);
    assert_int_equal(rw_sha256_init(&loop, &h2, NULL), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    rw_pipeline_t p2;
    assert_int_equal(rw_pipeline(&p2, on_server_done, &r.stream, &h2.stream, &k.stream, NULL), 0);
    for (int i = 0; i < 100000 && (done_calls == 0 || server_done == 0); i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(done_err, 0);
    assert_int_equal(server_err, 0);
    assert_int_equal(k.bytes, 5000000);
    char a[65], b[65];
    assert_int_equal(rw_sha256_digest(&h1, NULL, a), 0);
    assert_int_equal(rw_sha256_digest(&h2, NULL, b), 0);
    assert_string_equal(a, b);
    rw_stream_t *all[] = {&src.stream, &h1.stream, &w.stream, &r.stream, &h2.stream, &k.stream};
    for (int i = 0; i < 6; i++)
        rw_stream_close(all[i], NULL);
    test_sink_close_handle(&k);
    tcp_pair_close(&t);
    run_bounded(&loop, 1000);
    finish_loop(&loop);
}

static void on_pump(uv_idle_t *h)
{
    test_src_t *src = h->data;
    /* A producer faster than the network: push whenever asked. */
    for (int i = 0; i < 4 && src->wanted; i++)
        test_src_pump(src);
}

static size_t client_got;
static void on_client_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    static char mem[65536];
    *b = uv_buf_init(mem, sizeof mem);
}
static void on_client_read(uv_stream_t *h, ssize_t n, const uv_buf_t *b)
{
    if (n > 0)
        client_got += (size_t)n;
    if (client_got > 200000 && !uv_is_closing((uv_handle_t *)h)) {
        /* The client goes away mid-stream (RST: unread data is pending). */
        uv_read_stop(h);
        uv_close((uv_handle_t *)h, NULL);
    }
}

static void peer_gone_mid_stream_stops_the_source(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    tcp_pair_t t;
    tcp_pair_open(&loop, &t);
    test_src_t src;
    test_src_init(&loop, &src, UINT64_MAX / 2, 16384, 0);
    src.async = true;
    uv_idle_t pump;
    uv_idle_init(&loop, &pump);
    pump.data = &src;
    uv_idle_start(&pump, on_pump);
    rw_chunked_encoder_t e;
    assert_int_equal(rw_chunked_encoder_init(&loop, &e, NULL), 0);
    rw_uv_writable_t w;
    assert_int_equal(rw_uv_writable_init(&loop, &w, (uv_stream_t *)&t.accepted, false, NULL), 0);
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline(&p, on_done, &src.stream, &e.stream, &w.stream, NULL), 0);
    client_got = 0;
    uv_read_start((uv_stream_t *)&t.client, on_client_alloc, on_client_read);
    for (int i = 0; i < 1000000 && done_calls == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    uv_idle_stop(&pump);
    assert_int_equal(done_calls, 1);
    print_message("peer gone: %s after %zu bytes\n", rw_err_name(done_err), client_got);
    assert_true(done_err == UV_EPIPE || done_err == UV_ECONNRESET);
    assert_int_equal(src.destroys, 1);
    assert_int_equal(src.destroy_err, done_err);
    assert_true(client_got > 200000);
    rw_stream_close(&src.stream, NULL);
    rw_stream_close(&e.stream, NULL);
    rw_stream_close(&w.stream, NULL);
    uv_close((uv_handle_t *)&pump, NULL);
    tcp_pair_close(&t);
    run_bounded(&loop, 1000);
    assert_int_equal(done_calls, 1);
    finish_loop(&loop);
}

static void pipe_handles_work_too(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_pipe_t a, b;
    uv_pipe_init(&loop, &a, 0);
    uv_pipe_init(&loop, &b, 0);
    assert_int_equal(uv_pipe_open(&a, sv[0]), 0);
    assert_int_equal(uv_pipe_open(&b, sv[1]), 0);
    test_src_t src;
    test_src_init(&loop, &src, 1000000, 3000, 0);
    rw_uv_writable_t w;
    assert_int_equal(rw_uv_writable_init(&loop, &w, (uv_stream_t *)&a, false, NULL), 0);
    rw_uv_readable_t r;
    assert_int_equal(rw_uv_readable_init(&loop, &r, (uv_stream_t *)&b, 0, NULL), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.copy = malloc(1000000);
    k.copy_cap = 1000000;
    rw_pipeline_t p1, p2;
    assert_int_equal(rw_pipeline(&p1, on_done, &src.stream, &w.stream, NULL), 0);
    assert_int_equal(rw_pipeline(&p2, on_server_done, &r.stream, &k.stream, NULL), 0);
    for (int i = 0; i < 100000 && (done_calls == 0 || server_done == 0); i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(done_err, 0);
    assert_int_equal(server_err, 0);
    assert_int_equal(k.bytes, 1000000);
    for (size_t i = 0; i < 1000000; i += 999)
        assert_int_equal(k.copy[i], (unsigned char)('a' + (int)(i / 3000)));
    free(k.copy);
    rw_stream_close(&src.stream, NULL);
    rw_stream_close(&w.stream, NULL);
    rw_stream_close(&r.stream, NULL);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);
    uv_close((uv_handle_t *)&a, NULL);
    uv_close((uv_handle_t *)&b, NULL);
    run_bounded(&loop, 1000);
    finish_loop(&loop);
}

static int server_setup(void **state)
{
    server_done = 0;
    server_err = 1;
    return setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(file_readable_reads_a_byte_range, setup),
        cmocka_unit_test_setup(file_readable_over_fd_to_eof, setup),
        cmocka_unit_test_setup(file_readable_errors, setup),
        cmocka_unit_test_setup(file_readable_closed_mid_read, setup),
        cmocka_unit_test_setup(file_writable_has_everything_on_disk_at_finish, setup),
        cmocka_unit_test_setup(file_writable_open_error_stops_source, setup),
        cmocka_unit_test_setup(tcp_carries_a_stream_both_ways_with_digests, server_setup),
        cmocka_unit_test_setup(peer_gone_mid_stream_stops_the_source, server_setup),
        cmocka_unit_test_setup(pipe_handles_work_too, server_setup),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
