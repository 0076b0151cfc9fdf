<?php
// opcache-reset.php: lets cutover's after_swap hook reset PHP's opcache, where the server in front
// hands PHP-FPM paths through `current` and its config cannot be changed (shared hosting, a fixed
// vhost), and for Apache, which always does (apache-php-fpm.conf).
//
// Install: copy into your application's web root (public/) and deploy it once. Then, once, on the
// server, put a secret beside `current` (in the deploy path: never served), readable by the user
// PHP runs as:
//
//     head -c 32 /dev/urandom | base64 > /var/www/app/opcache-reset.secret
//
// and add the hook to cutover.toml, with @URL@ replaced by the site's address (https://example.com):
//
//   [hooks]
//   after_swap = ['curl -fsS --max-time 30 --data-binary "@$CUTOVER_DEPLOY_PATH/opcache-reset.secret" @URL@/opcache-reset.php']
//
// What it does: opcache_reset() empties the opcache of the PHP-FPM pool that runs this script, and
// each of its workers drops its realpath cache before its next request. cutover exits after its
// after_swap hooks, so the first request that starts after cutover exits runs the new release.
// Requests between the swap and the hook (milliseconds) still get the previous release, whole.
// Every script is compiled again on its next use.
//
// Without it: PHP-FPM keeps answering with the previous release after the swap, with no time limit
// (see nginx-php-fpm.conf).
//
// Only a POST whose body is the secret resets anything; other requests get 405 or 403. If opcache
// is off in this PHP, the answer is 500 and the hook fails (cutover exits 3, the release is live):
// opcache_reset() then cannot clear the workers' realpath caches either; use php-fpm-pool.conf.
//
// Tested by tests/serving.rs: nginx_php_fpm_with_document_root_serves_the_previous_release_until_the_opcache_reset_hook
// and apache_php_fpm_serves_the_previous_release_until_the_opcache_reset_hook (this file and
// this hook line, as they are).

declare(strict_types=1);

if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
    http_response_code(405);
    header('Allow: POST');
    exit("POST only\n");
}

// The deploy path is the directory that holds `current`, above this file's real directory
// (PATH/releases/ID/public, or PATH/releases/ID when the release is the web root).
$deploy_path = __DIR__;
while (!is_link($deploy_path . '/current')) {
    if (dirname($deploy_path) === $deploy_path) {
        http_response_code(500);
        exit("no deploy path (a directory with `current`) above this script\n");
    }
    $deploy_path = dirname($deploy_path);
}

$secret = @file_get_contents($deploy_path . '/opcache-reset.secret');
$given = (string) file_get_contents('php://input');
if ($secret === false || trim($secret) === '' || !hash_equals(trim($secret), trim($given))) {
    http_response_code(403);
    exit("forbidden\n");
}

if (!function_exists('opcache_reset') || !opcache_reset()) {
    http_response_code(500);
    exit("opcache is off in this PHP: nothing was reset\n");
}
echo "opcache reset\n";
