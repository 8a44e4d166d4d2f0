/* cyclone_secure_peer.c -- minimal Eclipse Cyclone DDS 0.10 peer with a configurable topic.
 *
 * Security (and loopback-only networking) come from the Cyclone XML in CYCLONEDDS_URI, exactly
 * as for ddsperf (see ../dds-pair-check.sh).  Unlike ddsperf (topics DDSPerf*, partitions named
 * after GUIDs) this peer uses ONE topic of your choice (default "rt/dds_pair_check", which the
 * sros2 default permissions rt/<anything> grant) in the default partition, type dds_pair_check::Msg.
 *
 * --role both (default): a writer and a reader; writes 10 samples/s tagged with --name once the
 *   writer matched, counts samples from other participants.  Done when writer and reader both
 *   matched a remote peer and >= --count samples were received.
 * --role pub: only a writer (for enclaves whose permissions grant publish only, e.g. sros2's
 *   talker on rt/chatter).  Done when it matched a remote reader and wrote >= --count samples.
 * --role sub: only a reader (e.g. sros2's listener).  Done when it matched a remote writer and
 *   received >= --count samples from another participant.
 * After "done" it lingers --linger seconds, still writing, so the other side can finish too.
 * Exit: 0 = done within --timeout; 1 = timeout; 2 = entity creation refused (prints
 * "dds_create_X(NAME) failed: RC", -13 = DDS_RETCODE_NOT_ALLOWED_BY_SECURITY); 3 = usage.
 * Last line: "[NAME] RESULT OK|FAIL: role=R writer_matched=N reader_matched=N received=N sent=N".
 *
 * Build: see ../dds-pair-check.sh (idlc dds_pair_check.idl; gcc ... -lddsc)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dds/dds.h"
#include "dds_pair_check.h"

static const char *name = "peer";
#define SAY(...) do { printf ("[%s] ", name); printf (__VA_ARGS__); printf ("\n"); fflush (stdout); } while (0)

static void usage (const char *p)
{
  fprintf (stderr, "usage: %s [--name N] [--domain D] [--topic T] [--role both|pub|sub] [--count N] [--timeout SEC] [--linger SEC]\n", p);
  exit (3);
}

int main (int argc, char **argv)
{
  const char *topic_name = "rt/dds_pair_check", *role = "both";
  int domain = 0, count = 10;
  double timeout_s = 15, linger_s = 2;
  for (int i = 1; i < argc; i++)
  {
    if (i + 1 >= argc) usage (argv[0]);
    if (!strcmp (argv[i], "--name")) name = argv[++i];
    else if (!strcmp (argv[i], "--domain")) domain = atoi (argv[++i]);
    else if (!strcmp (argv[i], "--topic")) topic_name = argv[++i];
    else if (!strcmp (argv[i], "--role")) role = argv[++i];
    else if (!strcmp (argv[i], "--count")) count = atoi (argv[++i]);
    else if (!strcmp (argv[i], "--timeout")) timeout_s = atof (argv[++i]);
    else if (!strcmp (argv[i], "--linger")) linger_s = atof (argv[++i]);
    else usage (argv[0]);
  }
  const int pub = !strcmp (role, "both") || !strcmp (role, "pub");
  const int sub = !strcmp (role, "both") || !strcmp (role, "sub");
  if (!pub && !sub) usage (argv[0]);

  dds_entity_t dp = dds_create_participant ((dds_domainid_t) domain, NULL, NULL);
  if (dp < 0) { printf ("dds_create_participant(domain %d) failed: %d (%s)\n", domain, (int) dp, dds_strretcode (dp)); return 2; }
  SAY ("participant created on domain %d", domain);
  dds_entity_t tp = dds_create_topic (dp, &dds_pair_check_Msg_desc, topic_name, NULL, NULL);
  if (tp < 0) { printf ("dds_create_topic(%s) failed: %d (%s)\n", topic_name, (int) tp, dds_strretcode (tp)); dds_delete (dp); return 2; }

  dds_qos_t *qos = dds_create_qos ();
  dds_qset_reliability (qos, DDS_RELIABILITY_RELIABLE, DDS_SECS (10));
  dds_qset_history (qos, DDS_HISTORY_KEEP_LAST, 20);
  dds_qset_ignorelocal (qos, DDS_IGNORELOCAL_PARTICIPANT);   /* only remote matches count */
  dds_entity_t wr = 0, rd = 0;
  if (pub)
  {
    wr = dds_create_writer (dp, tp, qos, NULL);
    if (wr < 0) { printf ("dds_create_writer(%s) failed: %d (%s)\n", topic_name, (int) wr, dds_strretcode (wr)); dds_delete (dp); return 2; }
  }
  if (sub)
  {
    rd = dds_create_reader (dp, tp, qos, NULL);
    if (rd < 0) { printf ("dds_create_reader(%s) failed: %d (%s)\n", topic_name, (int) rd, dds_strretcode (rd)); dds_delete (dp); return 2; }
  }
  dds_delete_qos (qos);
  SAY ("%s created on topic '%s' (role %s)", pub && sub ? "writer+reader" : pub ? "writer" : "reader", topic_name, role);

  dds_pair_check_Msg msg = { .seq = 0, .from = (char *) name };
  int received = 0, done = 0;
  uint32_t wr_matched = 0, rd_matched = 0, sent = 0;
  const dds_time_t t0 = dds_time ();
  dds_time_t t_done = 0;
  for (;;)
  {
    dds_publication_matched_status_t ps;
    dds_subscription_matched_status_t ss;
    if (pub && dds_get_publication_matched_status (wr, &ps) == 0 && ps.current_count != wr_matched)
      SAY ("writer matched readers: %u", wr_matched = ps.current_count);
    if (sub && dds_get_subscription_matched_status (rd, &ss) == 0 && ss.current_count != rd_matched)
      SAY ("reader matched writers: %u", rd_matched = ss.current_count);
    if (pub && wr_matched > 0)
    {
      msg.seq++;
      if (dds_write (wr, &msg) == 0)
        sent++;
    }
    if (sub)
    {
      void *samples[16] = { NULL };
      dds_sample_info_t infos[16];
      int32_t n;
      while ((n = dds_take (rd, samples, infos, 16, 16)) > 0)
      {
        for (int32_t i = 0; i < n; i++)
        {
          const dds_pair_check_Msg *m = samples[i];
          if (infos[i].valid_data && strcmp (m->from, name) != 0)
          {
            received++;
            if (received == 1 || received % 10 == 0)
              SAY ("received #%d from %s (seq %u)", received, m->from, m->seq);
          }
        }
        dds_return_loan (rd, samples, n);
      }
    }
    const double t = (double) (dds_time () - t0) / 1e9;
    if (!done && (!pub || (wr_matched > 0 && (sub || sent >= (uint32_t) count)))
              && (!sub || (rd_matched > 0 && received >= count)))
    {
      done = 1; t_done = dds_time ();
      SAY ("SUCCESS criteria met after %.1fs; lingering %.1fs so the peer can finish", t, linger_s);
    }
    if (done && (double) (dds_time () - t_done) / 1e9 >= linger_s)
      break;
    if (!done && t >= timeout_s)
      break;
    dds_sleepfor (DDS_MSECS (100));
  }
  SAY ("%s: role=%s writer_matched=%u reader_matched=%u received=%d sent=%u", done ? "RESULT OK" : "RESULT FAIL",
       role, wr_matched, rd_matched, received, sent);
  dds_delete (dp);
  return done ? 0 : 1;
}
