package wire

import (
	"strings"
	"testing"
)

func TestCheckTopic(t *testing.T) {
	for _, ok := range []string{TopicRequestLogs, TopicEvents, TopicDeadLetter, "a", "A_b-c.9", strings.Repeat("x", 249)} {
		if err := CheckTopic(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "bad topic/name", "{env.TOPIC}", "é", strings.Repeat("x", 250)} {
		if err := CheckTopic(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
