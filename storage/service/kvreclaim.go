package service

func (s *Service) kvReclaimLoop() {
	<-s.ctx.Done()
}
