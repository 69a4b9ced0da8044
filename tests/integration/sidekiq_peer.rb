# sidekiq_peer.rb: the real Sidekiq (Debian's ruby-sidekiq) as a peer of outreach in tests.
#
#   ruby sidekiq_peer.rb push CLASS QUEUE ARGS_JSON [AT]   pushes with Sidekiq::Client, prints the jid
#   ruby sidekiq_peer.rb stats                            prints Sidekiq's API view as JSON
#
# The Redis URL comes from OUTREACH_REDIS_URL (redis:// or unix://).
require "json"
require "sidekiq"
require "sidekiq/api"

url = ENV.fetch("OUTREACH_REDIS_URL")
redis = url.start_with?("unix://") ? { path: url.sub("unix://", "").sub(/\?.*/, "") } : { url: url }
Sidekiq.configure_client { |c| c.redis = redis }
Sidekiq.logger.level = Logger::WARN
Redis.sadd_returns_boolean = false if Redis.respond_to?(:sadd_returns_boolean=)

case ARGV[0]
when "push"
  job = { "class" => ARGV[1], "queue" => ARGV[2], "args" => JSON.parse(ARGV[3]) }
  job["at"] = ARGV[4].to_f if ARGV[4]
  puts Sidekiq::Client.push(job)
when "stats"
  s = Sidekiq::Stats.new
  procs = Sidekiq::ProcessSet.new.map do |p|
    { "identity" => p["identity"], "hostname" => p["hostname"], "pid" => p["pid"], "busy" => p["busy"],
      "queues" => p["queues"], "concurrency" => p["concurrency"], "quiet" => p["quiet"], "beat" => p["beat"],
      "tag" => p["tag"], "version" => p["version"] }
  end
  workers = Sidekiq::Workers.new.map { |pkey, tid, work| { "process" => pkey, "tid" => tid, "queue" => work["queue"], "class" => work["payload"]["class"] } }
  out = { "processed" => s.processed, "failed" => s.failed, "enqueued" => s.enqueued,
          "scheduled_size" => s.scheduled_size, "retry_size" => s.retry_size, "dead_size" => s.dead_size,
          "queues" => s.queues, "processes" => procs, "workers" => workers,
          "retries" => Sidekiq::RetrySet.new.map { |j| { "jid" => j.jid, "class" => j.klass, "error_class" => j["error_class"], "retry_count" => j["retry_count"] } },
          "dead" => Sidekiq::DeadSet.new.map { |j| { "jid" => j.jid, "class" => j.klass, "error_class" => j["error_class"], "error_message" => j["error_message"] } },
          "latency" => Sidekiq::Queue.new("default").latency }
  puts JSON.generate(out)
else
  abort "usage: sidekiq_peer.rb push CLASS QUEUE ARGS_JSON [AT] | stats"
end
