# The peer for bench/queue.py: Sidekiq's own server running a PingJob that does what outreach's does
# with no reply key: nothing.
require "sidekiq"

url = ENV.fetch("OUTREACH_REDIS_URL")
redis = url.start_with?("unix://") ? { path: url.sub("unix://", "").sub(/\?.*/, "") } : { url: url }
Sidekiq.configure_server { |c| c.redis = redis }
Sidekiq.configure_client { |c| c.redis = redis }

class PingJob
  include Sidekiq::Worker
  def perform(reply_key = nil, work_ms = 0)
    sleep(work_ms / 1000.0) if work_ms.to_i > 0
    Sidekiq.redis { |r| r.sadd(reply_key, jid) } if reply_key
  end
end
